"""channel leases and live streamers (fleet: each channel aired by exactly one streamer)

Revision ID: 0010_channel_leases
Revises: 0008
Create Date: 2026-12-05 08:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0010_channel_leases'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'channellease',
        sa.Column('channel_id', sa.String(), sa.ForeignKey('channel.id'), primary_key=True),
        sa.Column('owner', sa.String(), nullable=True),
        sa.Column('host', sa.String(), nullable=True),
        sa.Column('token', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('expires_at', sa.DateTime(), nullable=True),
        sa.Column('since', sa.DateTime(), nullable=True),
        sa.Column('handover_to', sa.String(), nullable=True),
    )
    op.create_index('ix_channellease_owner', 'channellease', ['owner'])
    op.create_table(
        'streamerhost',
        sa.Column('owner', sa.String(), primary_key=True),
        sa.Column('host', sa.String(), nullable=False),
        sa.Column('capacity', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('seen_at', sa.DateTime(), nullable=False),
    )
    op.create_index('ix_streamerhost_seen_at', 'streamerhost', ['seen_at'])
    with op.batch_alter_table('segment') as batch:
        batch.add_column(sa.Column('air_token', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('segment') as batch:
        batch.drop_column('air_token')
    op.drop_index('ix_streamerhost_seen_at', 'streamerhost')
    op.drop_table('streamerhost')
    op.drop_index('ix_channellease_owner', 'channellease')
    op.drop_table('channellease')
