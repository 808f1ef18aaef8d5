"""Voice-overs (POLICY C7): recordings of scripts, each avatar's voice, and consents that name voice explicitly

Revision ID: 0014_voiceover
Revises: 0009_audit_role_macs
Create Date: 2026-12-05 23:10:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0014_voiceover'
down_revision = '0009_audit_role_macs'
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        'voiceover',
        sa.Column('id', S(), nullable=False),
        sa.Column('script_id', S(), nullable=False),
        sa.Column('text_sha256', S(), nullable=False),
        sa.Column('speaker', S(), nullable=False),
        sa.Column('creator_id', S(), nullable=True),
        sa.Column('actor_name', S(length=200), nullable=True),
        sa.Column('uploaded_by', S(), nullable=True),
        sa.Column('approved_at', sa.DateTime(), nullable=True),
        sa.Column('approved_name', S(), nullable=True),
        sa.Column('audio_path', S(), nullable=False),
        sa.Column('upload_sha256', S(), nullable=False),
        sa.Column('audio_sha256', S(), nullable=False),
        sa.Column('duration_s', sa.Float(), nullable=False),
        sa.Column('matched', sa.Float(), nullable=False),
        sa.Column('words', sa.JSON(), nullable=False),
        sa.Column('phonemes', sa.JSON(), nullable=False),
        sa.Column('parts', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['script_id'], ['script.id']),
        sa.ForeignKeyConstraint(['creator_id'], ['creator.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_voiceover_script_id', 'voiceover', ['script_id'], unique=True)
    op.create_index('ix_voiceover_creator_id', 'voiceover', ['creator_id'], unique=False)
    with op.batch_alter_table('avatar') as batch:
        batch.add_column(sa.Column('voice', S(length=200), nullable=False, server_default='tts'))
    with op.batch_alter_table('consent') as batch:
        # Consents granted before this change never named voice explicitly: they do not cover the creator's own
        # recorded voice (C7), whatever their `voice` field says.
        batch.add_column(sa.Column('voice_explicit', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('consent') as batch:
        batch.drop_column('voice_explicit')
    with op.batch_alter_table('avatar') as batch:
        batch.drop_column('voice')
    op.drop_index('ix_voiceover_creator_id', table_name='voiceover')
    op.drop_index('ix_voiceover_script_id', table_name='voiceover')
    op.drop_table('voiceover')
