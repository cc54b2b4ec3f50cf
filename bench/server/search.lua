-- bench/server/search.lua - wrk script: every request POSTs the same image to /v1/search as
-- multipart/form-data field "image" (what the web page sends). Usage:
--   wrk -s bench/server/search.lua URL/v1/search?k=10 -- IMAGE.jpg
local boundary = "----shoplens-bench-5f3a9c"

function init(args)
  local f = assert(io.open(args[1], "rb"), "cannot open the query image")
  local img = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
  wrk.body = "--" .. boundary .. "\r\n" ..
             "Content-Disposition: form-data; name=\"image\"; filename=\"query.jpg\"\r\n" ..
             "Content-Type: image/jpeg\r\n\r\n" .. img .. "\r\n--" .. boundary .. "--\r\n"
end
