"""The scope names a session may be granted (SPEC-003 §6.7, SPEC-004 §2.11). Stdlib only, so
``maia`` commands can name them without importing the HTTP stack."""

MEMORY_READ = "memory:read"
MEMORY_WRITE = "memory:write"
MEMORY_ADMIN = "memory:admin"
MODELS_ASK = "models:ask"
SCOPES = (MEMORY_READ, MEMORY_WRITE, MEMORY_ADMIN, MODELS_ASK)
# What agents need: recall, record, ask a cortex. Never memory:admin (SPEC-004 §2.11).
DEFAULT_AGENT_SCOPES = (MEMORY_READ, MEMORY_WRITE, MODELS_ASK)
