module sdp.example/service

go 1.19
