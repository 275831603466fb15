"""OpenVINO ops, one module per family. Each module registers its ops and builders itself;
``ember.graph.registry.load_ops`` imports them all, so no list of ops is kept here."""
