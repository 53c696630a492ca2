"""What the hub tells its operators about itself: metrics for Prometheus."""
