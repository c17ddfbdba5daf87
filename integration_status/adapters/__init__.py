"""Provider adapters: the only code that talks to provider APIs (through httpx, or psycopg for the DB probe).

Import the adapter modules directly (``integration_status.adapters.github``); this package imports nothing so that
``import integration_status`` stays light.
"""
