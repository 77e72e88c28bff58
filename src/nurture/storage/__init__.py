"""The only package that imports SQLAlchemy: one module per aggregate, one function per
operation."""
