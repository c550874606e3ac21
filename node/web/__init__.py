"""The node's web page (SPEC-003 §11): a login with the local token, then one live page.

Everything the page shows comes from the same HTTP API the CLI uses, through the same
middleware chain; this package adds only what a browser needs on top: the login cookie as
a credential (with CSRF protection), a live event stream, a documents listing, and the
page's static files, which ship inside the package (``node/web/static``).
"""
