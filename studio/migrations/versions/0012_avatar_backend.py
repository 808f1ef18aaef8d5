"""An avatar names its renderer backend (its renders' queue follows it); workers register what they serve

Revision ID: 0012_avatar_backend
Revises: 0008
Create Date: 2027-01-10 12:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0012_avatar_backend'
down_revision = '0010_channel_leases'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every avatar so far was built for the only backend there was.
    with op.batch_alter_table('avatar') as batch:
        batch.add_column(sa.Column('renderer', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False,
                                   server_default='footage'))
    # A worker's row says the host, process, renderer backends and concurrency it serves with; rows of workers
    # started before this are rewritten when they start again.
    with op.batch_alter_table('workerinfo') as batch:
        batch.add_column(sa.Column('host', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(sa.Column('pid', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('renderers', sa.JSON(), nullable=False, server_default='[]'))
        batch.add_column(sa.Column('concurrency', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workerinfo') as batch:
        for column in ('concurrency', 'renderers', 'pid', 'host'):
            batch.drop_column(column)
    with op.batch_alter_table('avatar') as batch:
        batch.drop_column('renderer')
