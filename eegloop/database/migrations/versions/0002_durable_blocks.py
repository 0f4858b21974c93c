"""durable blocks: block accounting, rejected epochs, epoch -> block link, session claims, imported files

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 13:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claim_owner', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('claim_heartbeat', sa.Float(), nullable=True))

    with op.batch_alter_table('blocks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('n_stimuli', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('n_epochs', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('n_rejected', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('reason', sa.Text(), nullable=True))

    with op.batch_alter_table('epochs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('block_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_epochs_block_id'), ['block_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_epochs_block_id_blocks'), 'blocks', ['block_id'], ['id'],
                                    ondelete='CASCADE')
    # epochs stored before this revision reach their block through their stim_on event
    op.execute("UPDATE epochs SET block_id = (SELECT events.block_id FROM events WHERE events.id = epochs.event_id) "
               "WHERE event_id IS NOT NULL")
    # and those without an event through their (session, run, block) numbers
    op.execute('UPDATE epochs SET block_id = (SELECT blocks.id FROM blocks JOIN runs ON runs.id = blocks.run_id '
               'WHERE runs.session_id = epochs.session_id AND runs."index" = epochs.run_index '
               'AND blocks."index" = epochs.block_index) WHERE block_id IS NULL')

    op.create_table('rejected_epochs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('block_id', sa.Integer(), nullable=True),
    sa.Column('event_id', sa.Integer(), nullable=True),
    sa.Column('run_index', sa.Integer(), nullable=False),
    sa.Column('block_index', sa.Integer(), nullable=False),
    sa.Column('trial', sa.Integer(), nullable=True),
    sa.Column('label', sa.String(length=128), nullable=False),
    sa.Column('onset_lsl', sa.Float(), nullable=True),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['block_id'], ['blocks.id'], name=op.f('fk_rejected_epochs_block_id_blocks'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_rejected_epochs_event_id_events'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_rejected_epochs_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rejected_epochs'))
    )
    with op.batch_alter_table('rejected_epochs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rejected_epochs_block_id'), ['block_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rejected_epochs_session_id'), ['session_id'], unique=False)

    op.create_table('source_files',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_source_files_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_source_files'))
    )
    with op.batch_alter_table('source_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_source_files_session_id'), ['session_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_source_files_sha256'), ['sha256'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('source_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_source_files_sha256'))
        batch_op.drop_index(batch_op.f('ix_source_files_session_id'))
    op.drop_table('source_files')
    with op.batch_alter_table('rejected_epochs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rejected_epochs_session_id'))
        batch_op.drop_index(batch_op.f('ix_rejected_epochs_block_id'))
    op.drop_table('rejected_epochs')
    with op.batch_alter_table('epochs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_epochs_block_id_blocks'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_epochs_block_id'))
        batch_op.drop_column('block_id')
    with op.batch_alter_table('blocks', schema=None) as batch_op:
        batch_op.drop_column('reason')
        batch_op.drop_column('n_rejected')
        batch_op.drop_column('n_epochs')
        batch_op.drop_column('n_stimuli')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('claim_heartbeat')
        batch_op.drop_column('claim_owner')
