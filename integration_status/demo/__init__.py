"""The demo: simulated providers whose state changes over time, and the server behind ``integration-status demo``."""
