"""Webhooks for merchants: endpoints they register, events written to an outbox in the
transaction of the change itself (triggers in ``migrations/sql/0013_webhooks.sql``), and the
worker (``alliance webhooks run``) that signs and delivers them at least once.
"""
