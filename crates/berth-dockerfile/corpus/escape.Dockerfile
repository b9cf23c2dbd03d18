# escape=`
FROM mcr.microsoft.com/windows/servercore:ltsc2022
SHELL ["powershell", "-Command", "$ErrorActionPreference = 'Stop';"]
RUN New-Item -ItemType Directory C:\Example ; `
    Set-Content C:\Example\hello.txt 'hi'
COPY test.txt c:\
WORKDIR C:\Example
ENV PATH="C:\Example;${PATH}"
RUN dir c:\
