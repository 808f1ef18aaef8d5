"""scheduled shows: the planner's state on the show; breaks are segments without a script

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 14:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('show', schema=None) as batch_op:
        batch_op.add_column(sa.Column('plan_state', sa.JSON(), nullable=True))
    with op.batch_alter_table('segment', schema=None) as batch_op:
        batch_op.alter_column('script_id', existing_type=sa.String(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM segment WHERE script_id IS NULL")
    with op.batch_alter_table('segment', schema=None) as batch_op:
        batch_op.alter_column('script_id', existing_type=sa.String(), nullable=False)
    with op.batch_alter_table('show', schema=None) as batch_op:
        batch_op.drop_column('plan_state')
