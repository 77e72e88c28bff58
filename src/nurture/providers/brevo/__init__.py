"""brevo provider."""
