"""The REST API: thin routes that parse, call a service, and answer with a public schema. No SQL here."""
