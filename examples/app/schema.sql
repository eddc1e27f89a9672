-- A miniature of the Vertex AR database: the tables the app keeps, a few rows each.
PRAGMA journal_mode = WAL;
CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL, hashed_password TEXT NOT NULL, is_admin INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE clients (id INTEGER PRIMARY KEY, phone TEXT NOT NULL, name TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE portraits (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients(id), image_path TEXT NOT NULL, marker_fset TEXT, marker_fset3 TEXT, marker_iset TEXT, permanent_link TEXT UNIQUE NOT NULL, view_count INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE videos (id INTEGER PRIMARY KEY, portrait_id INTEGER NOT NULL REFERENCES portraits(id), video_path TEXT NOT NULL, is_active INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE INDEX idx_portraits_client ON portraits(client_id);
CREATE INDEX idx_videos_portrait ON videos(portrait_id);
INSERT INTO users VALUES (1, 'admin', '$2b$12$examplehashexamplehashexamplehashexampleha', 1, '2026-11-01T10:00:00');
INSERT INTO clients VALUES (1, '+79990000001', 'Anna', '2026-11-02T11:00:00'), (2, '+79990000002', 'Boris', '2026-11-03T12:00:00');
INSERT INTO portraits VALUES
  (1, 1, 'storage/client_1/images/portrait_1.jpg', 'storage/client_1/nft_markers/portrait_1.fset', 'storage/client_1/nft_markers/portrait_1.fset3', 'storage/client_1/nft_markers/portrait_1.iset', 'p-anna-1', 12, '2026-11-02T11:05:00'),
  (2, 2, 'storage/client_2/images/portrait_2.jpg', 'storage/client_2/nft_markers/portrait_2.fset', 'storage/client_2/nft_markers/portrait_2.fset3', 'storage/client_2/nft_markers/portrait_2.iset', 'p-boris-2', 3, '2026-11-03T12:05:00');
INSERT INTO videos VALUES (1, 1, 'storage/client_1/videos/video_1.mp4', 1, '2026-11-02T11:10:00'), (2, 2, 'storage/client_2/videos/video_2.mp4', 1, '2026-11-03T12:10:00');
