//! Helpers shared by the e2e tests: clients, namespaces, waiting on conditions.
