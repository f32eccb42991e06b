"""The information-governance console and pathway dashboard at ``/console`` (``gateway.console.app``).

The package imports nothing itself: the sharing modules use its directory names, and the
console app imports them.
"""
