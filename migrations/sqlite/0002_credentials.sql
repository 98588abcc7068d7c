-- Credentials stored by `creds add`, their token encrypted (XChaCha20-Poly1305; the credential id
-- and key version are the associated data). Never a plaintext token in this table.
CREATE TABLE credentials (
    id                TEXT    PRIMARY KEY NOT NULL,
    name              TEXT    NOT NULL CONSTRAINT credentials_name_unique UNIQUE,
    kind              TEXT    NOT NULL
        CONSTRAINT credentials_kind_check CHECK (kind IN ('service_account', 'pat', 'oauth')),
    tier              TEXT    NOT NULL
        CONSTRAINT credentials_tier_check CHECK (tier IN ('free', 'paid')),
    tenant            TEXT,
    key_version       INTEGER NOT NULL CONSTRAINT credentials_key_version_check CHECK (key_version >= 0),
    nonce             BLOB    NOT NULL,
    ciphertext        BLOB    NOT NULL,
    owner_gid         TEXT,
    owner_name        TEXT,
    owner_email       TEXT,
    state             TEXT    NOT NULL DEFAULT 'active'
        CONSTRAINT credentials_state_check CHECK (state IN ('active', 'refreshing', 'expired',
            'revoked', 'error')),
    created_at        INTEGER NOT NULL,
    last_used_at      INTEGER,
    last_validated_at INTEGER,
    last_error        TEXT
);

CREATE INDEX credentials_key_version ON credentials (key_version);
