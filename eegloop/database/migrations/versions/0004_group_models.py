"""group models: subjects' group consent, group models and the subjects each holds

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 10:00:00

SQLite and foreign keys: no table that others reference is copied and dropped here (Alembic's batch "move and
copy"): with foreign keys on, dropping ``subjects`` cascades to every session of every subject, and dropping
``models`` is refused where feedback trials refer to it. So the consent columns are added in place (a constant
default) and group models get tables of their own.
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # off for every subject already here: consent is given explicitly (eegloop subject consent S --group yes)
    with op.batch_alter_table('subjects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('group_consent', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('group_consent_at', sa.DateTime(timezone=True), nullable=True))

    op.create_table('group_models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('session_ids', sa.JSON(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('checkpoint_path', sa.String(length=1024), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_group_models')),
    sa.UniqueConstraint('name', name=op.f('uq_group_models_name'))
    )
    op.create_table('group_model_subjects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('session_ids', sa.JSON(), nullable=False),
    sa.Column('n_epochs', sa.Integer(), nullable=False),
    sa.Column('consent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['model_id'], ['group_models.id'], name=op.f('fk_group_model_subjects_model_id_group_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subject_id'], ['subjects.id'], name=op.f('fk_group_model_subjects_subject_id_subjects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_group_model_subjects')),
    sa.UniqueConstraint('model_id', 'subject_id', name='uq_group_model_subjects_model_subject')
    )
    with op.batch_alter_table('group_model_subjects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_group_model_subjects_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_group_model_subjects_subject_id'), ['subject_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('group_model_subjects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_group_model_subjects_subject_id'))
        batch_op.drop_index(batch_op.f('ix_group_model_subjects_model_id'))
    op.drop_table('group_model_subjects')
    op.drop_table('group_models')
    # ALTER TABLE ... DROP COLUMN in place (SQLite 3.35+), not batch mode's copy and drop of `subjects`, which
    # would cascade to every session
    op.drop_column('subjects', 'group_consent_at')
    op.drop_column('subjects', 'group_consent')
