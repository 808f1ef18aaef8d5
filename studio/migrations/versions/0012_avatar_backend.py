"""An avatar names its renderer backend (its renders' queue follows it)

Revision ID: 0012_avatar_backend
Revises: 0008
Create Date: 2027-01-10 12:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0012_avatar_backend'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every avatar so far was built for the only backend there was.
    with op.batch_alter_table('avatar') as batch:
        batch.add_column(sa.Column('renderer', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False,
                                   server_default='footage'))


def downgrade() -> None:
    with op.batch_alter_table('avatar') as batch:
        batch.drop_column('renderer')
