-- The files that hold a given top-level tag (here BodyPartExamined, (0018,0015)) and its value.
-- Reads the element rows (no index on path_id): use it for one-off questions.
SELECT f.path,
       e.value
FROM elements e
JOIN paths p ON p.id = e.path_id
JOIN files f ON f.id = e.file_id
WHERE p.path = '(0018,0015)'
  AND (e.flags & 3) = 0
ORDER BY f.path;
