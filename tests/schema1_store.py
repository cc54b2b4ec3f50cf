#!/usr/bin/python3
"""Turns a store made by this shoplens into a schema 1 store, as shoplens made them before the
store kept its own image copies: images referenced by their path in the feed's folder, no
currency, no pending_deletions (docs/formats/store.md, "Schema 1"). Used by the e2e tests of the
upgrade.

Usage: schema1_store.py STORE_DIR   (then the caller deletes STORE_DIR/images)
"""
import sqlite3
import sys

db = sqlite3.connect(sys.argv[1] + "/catalog.sqlite")
db.executescript("""
DROP TRIGGER images_release_file; DROP TRIGGER images_replace_file; DROP INDEX images_file;
DROP TABLE pending_deletions;
ALTER TABLE images DROP COLUMN file; ALTER TABLE products DROP COLUMN currency;
UPDATE meta SET value = '1' WHERE key = 'schema_version';
""")
db.commit()
