"""Stalled renders per worker: the renders a worker still holds that stopped making progress (workers.render.segment)

Revision ID: 0015_worker_stalled
Revises: 0014_voiceover
Create Date: 2026-12-07 12:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0015_worker_stalled'
down_revision = '0014_voiceover'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workerinfo') as batch:
        batch.add_column(sa.Column('stalled', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('workerinfo') as batch:
        batch.drop_column('stalled')
