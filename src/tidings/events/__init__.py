"""Events in: the CloudEvents envelope and the e-commerce catalog."""
