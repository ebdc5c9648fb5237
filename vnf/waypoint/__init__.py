"""The L7 waypoint VNF: Envoy, configured by the controller (docs/services.md, "L7 waypoint")."""
