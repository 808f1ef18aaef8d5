"""Consent review: who approved or rejected a consent, when, and why (status pending_review | rejected)

Revision ID: 0013_consent_review
Revises: 0011_scheduler_leader
Create Date: 2026-12-05 10:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0013_consent_review'
down_revision = '0011_scheduler_leader'
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table('consent') as batch:
        batch.add_column(sa.Column('reviewed_by', S(), nullable=True))
        batch.add_column(sa.Column('reviewed_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('review_reason', S(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('consent') as batch:
        batch.drop_column('review_reason')
        batch.drop_column('reviewed_at')
        batch.drop_column('reviewed_by')
