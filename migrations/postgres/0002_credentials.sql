-- Credentials stored by `creds add`, their token encrypted (XChaCha20-Poly1305; the credential id
-- and key version are the associated data). Never a plaintext token in this table.
CREATE TABLE credentials (
    id                uuid        PRIMARY KEY,
    name              text        NOT NULL CONSTRAINT credentials_name_unique UNIQUE,
    kind              text        NOT NULL
        CONSTRAINT credentials_kind_check CHECK (kind IN ('service_account', 'pat', 'oauth')),
    tier              text        NOT NULL
        CONSTRAINT credentials_tier_check CHECK (tier IN ('free', 'paid')),
    tenant            text,
    key_version       integer     NOT NULL CONSTRAINT credentials_key_version_check CHECK (key_version >= 0),
    nonce             bytea       NOT NULL,
    ciphertext        bytea       NOT NULL,
    owner_gid         text,
    owner_name        text,
    owner_email       text,
    state             text        NOT NULL DEFAULT 'active'
        CONSTRAINT credentials_state_check CHECK (state IN ('active', 'refreshing', 'expired',
            'revoked', 'error')),
    created_at        timestamptz NOT NULL,
    last_used_at      timestamptz,
    last_validated_at timestamptz,
    last_error        text
);

CREATE INDEX credentials_key_version ON credentials (key_version);
