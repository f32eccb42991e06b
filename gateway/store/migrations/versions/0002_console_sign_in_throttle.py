"""Console sign-in throttle: failed sign-ins and lockouts per account and per address

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('console_sign_in_throttle',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=120), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('console_sign_in_throttle', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_sign_in_throttle_at'), ['at'], unique=False)
        batch_op.create_index('ix_console_sign_in_throttle_key_at', ['key', 'at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('console_sign_in_throttle', schema=None) as batch_op:
        batch_op.drop_index('ix_console_sign_in_throttle_key_at')
        batch_op.drop_index(batch_op.f('ix_console_sign_in_throttle_at'))
    op.drop_table('console_sign_in_throttle')
