"""consent lifecycle: phrases, consent videos, agencies, approvals, attestations, channel territories, render task ids

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 10:55:14.489890
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agency',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('attestation',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('creator_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('product_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('statement', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('signed_name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('attested_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['creator_id'], ['creator.id'], ),
    sa.ForeignKeyConstraint(['product_id'], ['product.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('creator_id', 'product_id', 'kind')
    )
    with op.batch_alter_table('attestation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_attestation_creator_id'), ['creator_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_attestation_product_id'), ['product_id'], unique=False)

    op.create_table('consentphrase',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('avatar_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('text', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('issued_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['avatar_id'], ['avatar.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('consentphrase', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consentphrase_avatar_id'), ['avatar_id'], unique=False)

    op.create_table('scriptapproval',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('consent_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('script_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('text_sha256', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('signed_name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('approved_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['consent_id'], ['consent.id'], ),
    sa.ForeignKeyConstraint(['script_id'], ['script.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('consent_id', 'script_id', 'text_sha256')
    )
    with op.batch_alter_table('scriptapproval', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scriptapproval_consent_id'), ['consent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_scriptapproval_script_id'), ['script_id'], unique=False)

    with op.batch_alter_table('channel', schema=None) as batch_op:
        batch_op.add_column(sa.Column('territories', sa.JSON(), nullable=True))

    with op.batch_alter_table('consent', schema=None) as batch_op:
        batch_op.add_column(sa.Column('agency_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('require_script_approval', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('phrase_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('video_sha256', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('video_path', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('verification', sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f('ix_consent_agency_id'), ['agency_id'], unique=False)
        batch_op.create_foreign_key('fk_consent_agency_id_agency', 'agency', ['agency_id'], ['id'])

    with op.batch_alter_table('segment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('task_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('segment', schema=None) as batch_op:
        batch_op.drop_column('task_id')

    with op.batch_alter_table('consent', schema=None) as batch_op:
        batch_op.drop_constraint('fk_consent_agency_id_agency', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_consent_agency_id'))
        batch_op.drop_column('verification')
        batch_op.drop_column('video_path')
        batch_op.drop_column('video_sha256')
        batch_op.drop_column('phrase_id')
        batch_op.drop_column('require_script_approval')
        batch_op.drop_column('agency_id')

    with op.batch_alter_table('channel', schema=None) as batch_op:
        batch_op.drop_column('territories')

    with op.batch_alter_table('scriptapproval', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scriptapproval_script_id'))
        batch_op.drop_index(batch_op.f('ix_scriptapproval_consent_id'))

    op.drop_table('scriptapproval')
    with op.batch_alter_table('consentphrase', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consentphrase_avatar_id'))

    op.drop_table('consentphrase')
    with op.batch_alter_table('attestation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_attestation_product_id'))
        batch_op.drop_index(batch_op.f('ix_attestation_creator_id'))

    op.drop_table('attestation')
    op.drop_table('agency')
