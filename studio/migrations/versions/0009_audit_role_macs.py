"""audit events carry a MAC made with the key of the role that wrote them

Adds `auditevent.mac_role` and `auditevent.mac`. The events already in the log have none: the last of them is
written to `unkeyedauditevents`, so `studio audit verify` warns about those (unkeyed, from before this
migration) and reports any unkeyed event after them as forged.

Revision ID: 0009_audit_role_macs
Revises: 0013_consent_review (named 0009 when written; it runs after 0013)
Create Date: 2026-12-05 10:00:00
"""

from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0009_audit_role_macs'
down_revision = '0013_consent_review'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('auditevent') as batch:
        batch.add_column(sa.Column('mac_role', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch.add_column(sa.Column('mac', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    unkeyed = op.create_table(
        'unkeyedauditevents',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('last_id', sa.Integer(), nullable=False),
        sa.Column('migrated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    events = sa.table('auditevent', sa.column('id', sa.Integer()))
    last_id = op.get_bind().execute(sa.select(sa.func.max(events.c.id))).scalar()
    if last_id is not None:
        op.bulk_insert(unkeyed, [{"id": 1, "last_id": last_id,
                                  "migrated_at": datetime.now(UTC).replace(tzinfo=None)}])


def downgrade() -> None:
    op.drop_table('unkeyedauditevents')
    with op.batch_alter_table('auditevent') as batch:
        batch.drop_column('mac')
        batch.drop_column('mac_role')
