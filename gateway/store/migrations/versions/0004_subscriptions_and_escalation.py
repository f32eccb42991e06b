"""Partners' own Subscriptions (status, payload, filter, heartbeat, error) and urgent alerts to escalate

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=12), server_default='active', nullable=False))
        batch_op.add_column(sa.Column('content', sa.String(length=16), server_default='full-resource', nullable=False))
        batch_op.add_column(sa.Column('patient_filter', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('last_sent_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('error_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('owner_client', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('body', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('updated', sa.DateTime(timezone=True), nullable=True))
    op.create_table('urgent_alert',
    sa.Column('focus', sa.String(length=120), nullable=False),
    sa.Column('patient', sa.String(length=80), nullable=True),
    sa.Column('raised', sa.DateTime(timezone=True), nullable=False),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=200), nullable=True),
    sa.Column('escalated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('escalation_reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('focus')
    )
    with op.batch_alter_table('urgent_alert', schema=None) as batch_op:
        batch_op.create_index('ix_urgent_alert_open', ['escalated_at', 'acknowledged_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('urgent_alert', schema=None) as batch_op:
        batch_op.drop_index('ix_urgent_alert_open')
    op.drop_table('urgent_alert')
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        for column in ('updated', 'version', 'body', 'owner_client', 'last_error', 'error_since', 'last_sent_at',
                       'heartbeat_seconds', 'patient_filter', 'content', 'status'):
            batch_op.drop_column(column)
