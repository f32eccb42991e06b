"""Initial schema

Revision ID: 0001
Revises: 
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agreement',
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('loaded', sa.DateTime(timezone=True), nullable=False),
    sa.Column('approved_by', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('id', 'version')
    )
    op.create_table('audit_event',
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('recorded', sa.DateTime(timezone=True), nullable=False),
    sa.Column('patient', sa.String(length=80), nullable=True),
    sa.Column('client_id', sa.String(length=100), nullable=True),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_event_patient'), ['patient'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_event_recorded'), ['recorded'], unique=False)

    audit_head = op.create_table('audit_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('audit_seal',
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('jws', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_table('break_glass',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('organization', sa.String(length=200), nullable=False),
    sa.Column('user', sa.String(length=200), nullable=False),
    sa.Column('patient', sa.String(length=80), nullable=False),
    sa.Column('basis', sa.String(length=40), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('started', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends', sa.DateTime(timezone=True), nullable=False),
    sa.Column('review_status', sa.String(length=20), nullable=False),
    sa.Column('reviewer', sa.String(length=200), nullable=True),
    sa.Column('review_note', sa.Text(), nullable=True),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('break_glass', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_break_glass_client_id'), ['client_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_break_glass_patient'), ['patient'], unique=False)

    op.create_table('client',
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('organization', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('scopes', sa.Text(), nullable=False),
    sa.Column('roles', sa.String(length=200), nullable=False),
    sa.Column('jwks', sa.Text(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('conf_document',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('loaded', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', 'version')
    )
    op.create_table('console_account',
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('organization', sa.String(length=200), nullable=False),
    sa.Column('roles', sa.String(length=200), nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=True),
    sa.Column('password_hash', sa.String(length=300), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('username')
    )
    op.create_table('console_session',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('csrf', sa.String(length=64), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('token_hash')
    )
    with op.batch_alter_table('console_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_session_expires'), ['expires'], unique=False)
        batch_op.create_index(batch_op.f('ix_console_session_username'), ['username'], unique=False)

    op.create_table('delivery',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('subscription_id', sa.String(length=36), nullable=False),
    sa.Column('event_number', sa.Integer(), nullable=False),
    sa.Column('event', sa.String(length=40), nullable=False),
    sa.Column('recipient', sa.String(length=200), nullable=False),
    sa.Column('endpoint', sa.String(length=500), nullable=False),
    sa.Column('focus', sa.String(length=120), nullable=False),
    sa.Column('patient', sa.String(length=80), nullable=True),
    sa.Column('purpose', sa.String(length=40), nullable=False),
    sa.Column('acting_for', sa.String(length=100), nullable=True),
    sa.Column('extra_refs', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claimed_by', sa.String(length=100), nullable=True),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_delivery_patient', ['patient', 'status'], unique=False)

    op.create_table('disclosure',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('patient', sa.String(length=80), nullable=False),
    sa.Column('recipient', sa.String(length=200), nullable=False),
    sa.Column('acting_for', sa.String(length=100), nullable=True),
    sa.Column('client_id', sa.String(length=100), nullable=True),
    sa.Column('purpose', sa.String(length=40), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('resources', sa.Text(), nullable=False),
    sa.Column('agreements', sa.Text(), nullable=False),
    sa.Column('consents', sa.Text(), nullable=False),
    sa.Column('break_glass', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('disclosure', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_disclosure_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_disclosure_patient'), ['patient'], unique=False)

    op.create_table('match_review',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('agent', sa.String(length=200), nullable=False),
    sa.Column('detail', sa.LargeBinary(), nullable=False),
    sa.Column('key_id', sa.String(length=40), nullable=False),
    sa.Column('received', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('quarantine',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('agent', sa.String(length=200), nullable=False),
    sa.Column('location', sa.String(length=400), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('record', sa.LargeBinary(), nullable=True),
    sa.Column('key_id', sa.String(length=40), nullable=True),
    sa.Column('received', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('resolved', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_quarantine_agent'), ['agent'], unique=False)
        batch_op.create_index(batch_op.f('ix_quarantine_source'), ['source'], unique=False)

    op.create_table('resource',
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('patient', sa.String(length=80), nullable=True),
    sa.Column('custodian', sa.String(length=200), nullable=False),
    sa.Column('security', sa.String(length=200), nullable=False),
    sa.Column('categories', sa.String(length=400), nullable=False),
    sa.Column('key_id', sa.String(length=40), nullable=True),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('type', 'id')
    )
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.create_index('ix_resource_patient', ['patient'], unique=False)
        batch_op.create_index('ix_resource_type_updated', ['type', 'last_updated'], unique=False)

    op.create_table('resource_version',
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('last_updated', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('patient', sa.String(length=80), nullable=True),
    sa.Column('custodian', sa.String(length=200), nullable=False),
    sa.Column('security', sa.String(length=200), nullable=False),
    sa.Column('categories', sa.String(length=400), nullable=False),
    sa.Column('key_id', sa.String(length=40), nullable=True),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('version_id', 'type', 'id')
    )
    op.create_table('search_token',
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=40), nullable=False),
    sa.Column('value', sa.String(length=300), nullable=False),
    sa.PrimaryKeyConstraint('type', 'id', 'param', 'value')
    )
    with op.batch_alter_table('search_token', schema=None) as batch_op:
        batch_op.create_index('ix_search_token_lookup', ['type', 'param', 'value'], unique=False)

    op.create_table('subscription',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('recipient', sa.String(length=200), nullable=False),
    sa.Column('event', sa.String(length=40), nullable=False),
    sa.Column('endpoint', sa.String(length=500), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('events_queued', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('recipient', 'event', 'endpoint', name='uq_subscription_target')
    )
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        batch_op.create_index('ix_subscription_recipient_event', ['recipient', 'event'], unique=False)

    op.create_table('used_assertion',
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('jti', sa.String(length=200), nullable=False),
    sa.Column('expires', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('client_id', 'jti')
    )
    with op.batch_alter_table('used_assertion', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_used_assertion_expires'), ['expires'], unique=False)

    # The chain starts from a genesis head that every append locks and advances.
    op.bulk_insert(audit_head, [{"id": 1, "seq": 0, "hash": "0" * 64}])


def downgrade() -> None:
    with op.batch_alter_table('used_assertion', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_used_assertion_expires'))

    op.drop_table('used_assertion')
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        batch_op.drop_index('ix_subscription_recipient_event')

    op.drop_table('subscription')
    with op.batch_alter_table('search_token', schema=None) as batch_op:
        batch_op.drop_index('ix_search_token_lookup')

    op.drop_table('search_token')
    op.drop_table('resource_version')
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.drop_index('ix_resource_type_updated')
        batch_op.drop_index('ix_resource_patient')

    op.drop_table('resource')
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_quarantine_source'))
        batch_op.drop_index(batch_op.f('ix_quarantine_agent'))

    op.drop_table('quarantine')
    op.drop_table('match_review')
    with op.batch_alter_table('disclosure', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_disclosure_patient'))
        batch_op.drop_index(batch_op.f('ix_disclosure_at'))

    op.drop_table('disclosure')
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_patient')
        batch_op.drop_index('ix_delivery_due')

    op.drop_table('delivery')
    with op.batch_alter_table('console_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_session_username'))
        batch_op.drop_index(batch_op.f('ix_console_session_expires'))

    op.drop_table('console_session')
    op.drop_table('console_account')
    op.drop_table('conf_document')
    op.drop_table('client')
    with op.batch_alter_table('break_glass', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_break_glass_patient'))
        batch_op.drop_index(batch_op.f('ix_break_glass_client_id'))

    op.drop_table('break_glass')
    op.drop_table('audit_seal')
    op.drop_table('audit_head')
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_event_recorded'))
        batch_op.drop_index(batch_op.f('ix_audit_event_patient'))

    op.drop_table('audit_event')
    op.drop_table('agreement')
