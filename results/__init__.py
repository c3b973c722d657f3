"""The results service: keeps the result CloudEvents the pipeline emits and shows them.

Classification results (and compliance or evaluation results, in the same shape) arrive from the
Broker's Trigger as CloudEvents on `POST /`, dead letters on `POST /dead-letters`; each is stored
(SQLite by default, PostgreSQL when DATABASE_URL names one), announced to open pages by
server-sent events, and served as one card per object version on `/` and as JSON on `/api/...`.
"""
