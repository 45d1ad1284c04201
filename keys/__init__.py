"""Keys, certificates, trust and XML signatures.

``keys.pki``      key generation (rsa2048, rsa3072, p256), test CA, party certificates
``keys.store``    ``KeyStore`` (our keys, on disk) and ``TrustStore`` (partners' certificates)
``keys.xmldsig``  ``Signer`` / ``Verifier``: enveloped XML-DSig over a whole document
"""
