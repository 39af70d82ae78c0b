"""The mountable web app: Apple's pass web service, images, the card page, Google callbacks."""
