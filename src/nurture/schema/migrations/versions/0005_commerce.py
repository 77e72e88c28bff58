"""commerce: products, orders, order lines, RFM baseline

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from nurture.schema.types import Id, Json, UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Money = sa.Numeric(14, 2, asdecimal=False)
Quantity = sa.Numeric(12, 3, asdecimal=False)


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("name", sa.String(400), nullable=True),
        sa.Column("category", sa.String(100), nullable=True),
        sa.Column("price_band", sa.String(32), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_products"),
        sa.UniqueConstraint("key", name="uq_products_key"),
    )
    op.create_table(
        "orders",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("order_key", sa.String(200), nullable=False),
        sa.Column("contact_id", Id, nullable=False),
        sa.Column("ordered_at", UtcDateTime, nullable=False),
        sa.Column("net_amount", Money, nullable=False),
        sa.Column("gross_amount", Money, nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_orders_contact_id_contacts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("order_key", name="uq_orders_order_key"),
    )
    op.create_index("ix_orders_contact_id", "orders", ["contact_id"])
    op.create_table(
        "order_lines",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("order_id", Id, nullable=False),
        sa.Column("line_key", sa.String(200), nullable=False),
        sa.Column("product_key", sa.String(200), nullable=False),
        sa.Column("label", sa.String(400), nullable=True),
        sa.Column("quantity", Quantity, nullable=False),
        sa.Column("unit_price", Money, nullable=True),
        sa.Column("net_amount", Money, nullable=False),
        sa.Column("gross_amount", Money, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_order_lines"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name="fk_order_lines_order_id_orders", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("order_id", "line_key", name="uq_order_lines_order_id_line_key"),
    )
    op.create_table(
        "rfm_baselines",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("computed_at", UtcDateTime, nullable=False),
        sa.Column("contacts", sa.Integer, nullable=False),
        sa.Column("distribution", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rfm_baselines"),
    )


def downgrade() -> None:
    op.drop_table("rfm_baselines")
    op.drop_table("order_lines")
    op.drop_index("ix_orders_contact_id", table_name="orders")
    op.drop_table("orders")
    op.drop_table("products")
