"""resend provider."""
