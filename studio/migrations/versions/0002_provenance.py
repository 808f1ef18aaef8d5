"""provenance: archive copies with C2PA manifests, show recordings, ProduceIDs the watermark can carry

Revision ID: 0002
Revises: 0001
"""

import secrets

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('segment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('archive_path', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('manifest_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.create_table('recording',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('show_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('channel_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('produce_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('manifest_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('segment_ids', sa.JSON(), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['channel_id'], ['channel.id'], ),
    sa.ForeignKeyConstraint(['show_id'], ['show.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('produce_id')
    )
    with op.batch_alter_table('recording', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recording_show_id'), ['show_id'], unique=False)
    # Segments not rendered yet get a ProduceID in the new form (64 bits the watermark can carry);
    # rendered ones keep theirs, since it is signed into their bytes.
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id FROM segment WHERE state IN ('planned', 'failed', 'rendering')")).all()
    for (seg_id,) in rows:
        bind.execute(sa.text("UPDATE segment SET produce_id = :p WHERE id = :i"),
                     {"p": f"ecs-{secrets.token_hex(8)}", "i": seg_id})


def downgrade() -> None:
    with op.batch_alter_table('recording', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recording_show_id'))
    op.drop_table('recording')
    with op.batch_alter_table('segment', schema=None) as batch_op:
        batch_op.drop_column('manifest_id')
        batch_op.drop_column('archive_path')
