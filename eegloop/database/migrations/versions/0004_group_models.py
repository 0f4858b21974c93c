"""group models: subjects' group consent, named models without a subject, the subjects a group model holds

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 10:00:00
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
        batch_op.add_column(sa.Column('group_consent', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('group_consent_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.alter_column('subject_id', existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column('name', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_models_name'), ['name'])

    op.create_table('model_subjects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('session_ids', sa.JSON(), nullable=False),
    sa.Column('n_epochs', sa.Integer(), nullable=False),
    sa.Column('consent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_model_subjects_model_id_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subject_id'], ['subjects.id'], name=op.f('fk_model_subjects_subject_id_subjects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_subjects')),
    sa.UniqueConstraint('model_id', 'subject_id', name='uq_model_subjects_model_subject')
    )
    with op.batch_alter_table('model_subjects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_subjects_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_subjects_subject_id'), ['subject_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('model_subjects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_subjects_subject_id'))
        batch_op.drop_index(batch_op.f('ix_model_subjects_model_id'))
    op.drop_table('model_subjects')
    op.execute('DELETE FROM models WHERE subject_id IS NULL')  # group models have no place in the older schema
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_models_name'), type_='unique')
        batch_op.drop_column('name')
        batch_op.alter_column('subject_id', existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table('subjects', schema=None) as batch_op:
        batch_op.drop_column('group_consent_at')
        batch_op.drop_column('group_consent')
