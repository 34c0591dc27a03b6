"""Binary caches: push finished artifacts into a cache (a directory or a web server), install them into
another store by id, relocated to that store's path (admin_docs/caches.md).

Layering: this package uses core/ (store, locks, the checked unpacker) and is used by the operations
layer (sync), which hands it what it needs of a plan node; it never imports spec/ or build/.
"""
