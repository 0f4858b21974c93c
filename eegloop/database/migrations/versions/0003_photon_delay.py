"""photon delay: each stimulus event's marker-to-photon delay measured by a photodiode

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 22:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('photon_delay_ms', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('photon_delay_ms')
