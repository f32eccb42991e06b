"""Indexes SQLite's planner picks for person lookups: a covering search-token lookup
(type, param, value, id) and a person's resources by (patient, type, last_updated)

Without statistics SQLite preferred the primary keys' leading ``type`` column and scanned
every token (or resource) of a type: an identifier -> Patient lookup over 1,000 people took
2.5 ms, a person's Consents 0.36 ms; with these, 40 us and 6 us.

Revision ID: 0003
Revises: 0002
"""
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('search_token', schema=None) as batch_op:
        batch_op.drop_index('ix_search_token_lookup')
        batch_op.create_index('ix_search_token_lookup', ['type', 'param', 'value', 'id'], unique=False)
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.drop_index('ix_resource_patient')
        batch_op.create_index('ix_resource_patient_type_updated', ['patient', 'type', 'last_updated'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.drop_index('ix_resource_patient_type_updated')
        batch_op.create_index('ix_resource_patient', ['patient'], unique=False)
    with op.batch_alter_table('search_token', schema=None) as batch_op:
        batch_op.drop_index('ix_search_token_lookup')
        batch_op.create_index('ix_search_token_lookup', ['type', 'param', 'value'], unique=False)
