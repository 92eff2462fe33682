"""nextclick: session-based recommendation — what will this shopper click next, right now?"""

__version__ = "0.1.0"
