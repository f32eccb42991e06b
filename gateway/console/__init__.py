"""The information-governance console and pathway dashboard at ``/console``."""

from gateway.console.accounts import create_demo_accounts
from gateway.console.app import create_console

__all__ = ["create_console", "create_demo_accounts"]
