"""one scheduler at a time: the leader table (a lease with a fencing token per role)

Revision ID: 0011_scheduler_leader
Revises: 0012_avatar_backend
Create Date: 2026-12-06 10:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0011_scheduler_leader'
down_revision = '0012_avatar_backend'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('leader',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('host', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('token', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('since', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('leader')
