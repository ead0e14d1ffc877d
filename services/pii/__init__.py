"""PII service: finds and replaces personal data with Presidio + spaCy (internal gRPC).

tldextract (pulled in by presidio) fetches the public-suffix list from the network
unless this variable is empty, and it reads it when presidio is first imported, so
it is set here, before any module of this package can import presidio.
"""

import os

os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""
