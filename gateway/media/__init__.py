"""Media building blocks: XMTP attachment encryption, the blob store, and a fetcher for
URLs given by strangers. Not wired into the message path yet."""
