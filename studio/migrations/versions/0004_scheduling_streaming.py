"""scheduling and streaming: show schedules, segment air times and deadlines, breaks, sealed destination URLs, worker info

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 11:57:44.098746
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('workerinfo',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('queues', sa.JSON(), nullable=False),
    sa.Column('device', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('device_memory_mb', sa.Integer(), nullable=True),
    sa.Column('cpu_count', sa.Integer(), nullable=True),
    sa.Column('renders', sa.Integer(), nullable=False, server_default='0'),
    sa.Column('render_fps', sa.Float(), nullable=True),
    sa.Column('realtime_factor', sa.Float(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('last_seen', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('destination', schema=None) as batch_op:
        batch_op.add_column(sa.Column('url_masked', sqlmodel.sql.sqltypes.AutoString(), nullable=True))

    with op.batch_alter_table('segment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False,
                                      server_default='segment'))
        batch_op.add_column(sa.Column('air_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('deadline', sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_segment_deadline'), ['deadline'], unique=False)

    with op.batch_alter_table('show', schema=None) as batch_op:
        batch_op.add_column(sa.Column('schedule', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('show', schema=None) as batch_op:
        batch_op.drop_column('schedule')

    with op.batch_alter_table('segment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_segment_deadline'))
        batch_op.drop_column('deadline')
        batch_op.drop_column('air_at')
        batch_op.drop_column('kind')

    with op.batch_alter_table('destination', schema=None) as batch_op:
        batch_op.drop_column('url_masked')

    op.drop_table('workerinfo')
