"""Report sign-off: a partnership lead's confirmation of a quarter after seeing completeness

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('report_sign_off',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('quarter', sa.String(length=7), nullable=False),
    sa.Column('confirmed_by', sa.String(length=100), nullable=False),
    sa.Column('organization', sa.String(length=200), nullable=False),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completeness_digest', sa.String(length=64), nullable=False),
    sa.Column('records', sa.Integer(), nullable=False),
    sa.Column('complete', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('report_sign_off', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_report_sign_off_quarter'), ['quarter'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('report_sign_off', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_report_sign_off_quarter'))
    op.drop_table('report_sign_off')
