"""API keys may expire

Revision ID: 0008
Revises: 0007_store_keys
Create Date: 2026-12-04 19:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007_store_keys'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('apikey') as batch:
        batch.add_column(sa.Column('expires_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('apikey') as batch:
        batch.drop_column('expires_at')
