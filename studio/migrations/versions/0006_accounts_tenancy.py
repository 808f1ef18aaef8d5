"""accounts, API keys, login sessions, upload jobs; products and channels owned by an agency; GPU load of workers

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 10:30:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table('account',
    sa.Column('id', S(), nullable=False),
    sa.Column('email', S(length=320), nullable=False),
    sa.Column('name', S(length=200), nullable=False),
    sa.Column('role', S(), nullable=False),
    sa.Column('agency_id', S(), nullable=True),
    sa.Column('creator_id', S(), nullable=True),
    sa.Column('password_hash', S(), nullable=True),
    sa.Column('disabled', sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['agency_id'], ['agency.id'], ),
    sa.ForeignKeyConstraint(['creator_id'], ['creator.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_account_email'), ['email'], unique=True)
        batch_op.create_index(batch_op.f('ix_account_agency_id'), ['agency_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_account_creator_id'), ['creator_id'], unique=False)
    op.create_table('apikey',
    sa.Column('id', S(), nullable=False),
    sa.Column('account_id', S(), nullable=False),
    sa.Column('name', S(length=200), nullable=False),
    sa.Column('prefix', S(), nullable=False),
    sa.Column('key_hash', S(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_used_at', sa.DateTime(), nullable=True),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('apikey', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apikey_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_apikey_key_hash'), ['key_hash'], unique=True)
    op.create_table('loginsession',
    sa.Column('id', S(), nullable=False),
    sa.Column('account_id', S(), nullable=False),
    sa.Column('token_hash', S(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('loginsession', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loginsession_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_loginsession_token_hash'), ['token_hash'], unique=True)
    op.create_table('uploadjob',
    sa.Column('id', S(), nullable=False),
    sa.Column('creator_id', S(), nullable=False),
    sa.Column('account_id', S(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['creator_id'], ['creator.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('uploadjob', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_uploadjob_creator_id'), ['creator_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_uploadjob_account_id'), ['account_id'], unique=False)
    with op.batch_alter_table('workerinfo', schema=None) as batch_op:
        batch_op.add_column(sa.Column('device_load_percent', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('device_memory_used_mb', sa.Integer(), nullable=True))
    for table in ('product', 'channel'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('agency_id', S(), nullable=True))
            batch_op.create_index(batch_op.f(f'ix_{table}_agency_id'), ['agency_id'], unique=False)
            batch_op.create_foreign_key(f'fk_{table}_agency_id', 'agency', ['agency_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('workerinfo', schema=None) as batch_op:
        batch_op.drop_column('device_memory_used_mb')
        batch_op.drop_column('device_load_percent')
    for table in ('channel', 'product'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f'fk_{table}_agency_id', type_='foreignkey')
            batch_op.drop_index(batch_op.f(f'ix_{table}_agency_id'))
            batch_op.drop_column('agency_id')
    for table in ('uploadjob', 'loginsession', 'apikey', 'account'):
        op.drop_table(table)
