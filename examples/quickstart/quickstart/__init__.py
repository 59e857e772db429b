"""A small downstream project: a network that grows side branches while it trains."""
