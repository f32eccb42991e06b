"""Agreement governance: drafts and their review and sign-off steps, one-off disclosures

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agreement_draft',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('agreement_id', sa.String(length=100), nullable=False),
    sa.Column('stage', sa.String(length=20), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.Column('activated_version', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('agreement_draft', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agreement_draft_agreement_id'), ['agreement_id'], unique=False)
    op.create_table('agreement_step',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('agreement_id', sa.String(length=100), nullable=False),
    sa.Column('draft_id', sa.String(length=36), nullable=True),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('step', sa.String(length=30), nullable=False),
    sa.Column('party', sa.String(length=200), nullable=True),
    sa.Column('by', sa.String(length=200), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('agreement_step', schema=None) as batch_op:
        batch_op.create_index('ix_agreement_step_agreement', ['agreement_id', 'at'], unique=False)
    op.create_table('one_off_disclosure',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('patient', sa.String(length=80), nullable=False),
    sa.Column('requester', sa.String(length=200), nullable=False),
    sa.Column('purpose', sa.String(length=40), nullable=False),
    sa.Column('lawful_basis', sa.String(length=300), nullable=False),
    sa.Column('necessity', sa.Text(), nullable=False),
    sa.Column('disclosed', sa.Text(), nullable=False),
    sa.Column('decision', sa.String(length=20), nullable=False),
    sa.Column('decided_by', sa.String(length=200), nullable=False),
    sa.Column('recorded_by', sa.String(length=200), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('one_off_disclosure', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_one_off_disclosure_patient'), ['patient'], unique=False)
    with op.batch_alter_table('disclosure', schema=None) as batch_op:
        batch_op.add_column(sa.Column('one_off', sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('disclosure', schema=None) as batch_op:
        batch_op.drop_column('one_off')
    with op.batch_alter_table('one_off_disclosure', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_one_off_disclosure_patient'))
    op.drop_table('one_off_disclosure')
    with op.batch_alter_table('agreement_step', schema=None) as batch_op:
        batch_op.drop_index('ix_agreement_step_agreement')
    op.drop_table('agreement_step')
    with op.batch_alter_table('agreement_draft', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agreement_draft_agreement_id'))
    op.drop_table('agreement_draft')
