"""The ledger: every SQL statement and database driver of the project lives in this subpackage."""
