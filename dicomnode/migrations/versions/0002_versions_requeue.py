"""instance versions (changed re-sends) and study requeue record

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instance_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("previous_path", sa.String(length=512), nullable=False),
        sa.Column("previous_sha256", sa.String(length=64), nullable=False),
        sa.Column("new_path", sa.String(length=512), nullable=True),
        sa.Column("new_sha256", sa.String(length=64), nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=True),
        sa.Column("source_address", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_instance_versions_study_id"), "instance_versions", ["study_id"], unique=False
    )
    op.create_index(
        op.f("ix_instance_versions_sop_instance_uid"),
        "instance_versions",
        ["sop_instance_uid"],
        unique=False,
    )
    with op.batch_alter_table("studies") as batch:
        batch.add_column(
            sa.Column("requeue_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("requeued_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("requeued_at")
        batch.drop_column("requeue_count")
    op.drop_index(op.f("ix_instance_versions_sop_instance_uid"), table_name="instance_versions")
    op.drop_index(op.f("ix_instance_versions_study_id"), table_name="instance_versions")
    op.drop_table("instance_versions")
